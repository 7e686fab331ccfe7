"""Plug-in backends for the error, secret and preflight tests ("support.secret_fakes:Class"): the scripted
fakes of :mod:`support.fakes` with a credential option, or made to fail the way a third-party plug-in can."""

from __future__ import annotations

from support.fakes import BowEmbedder, ColourCaptioner, ScriptedLLM, SolidRenderer


class HeaderLLM(ScriptedLLM):
    """ScriptedLLM that takes credentials like an HTTP backend, and (carelessly) puts them in its info()."""

    def __init__(self, extra_headers=None, api_key=None, **kw):
        super().__init__(**kw)
        self.extra_headers = dict(extra_headers or {})
        self.api_key = api_key

    def info(self):
        return {**super().info(), "extra_headers": self.extra_headers, "api_key": self.api_key}


class BoomLLM(ScriptedLLM):
    """Fails on its first call, as a buggy plug-in would."""

    def generate(self, conversations, **kw):
        raise RuntimeError("the plug-in broke\nsecond line of the message")


class BoomCaptioner(ColourCaptioner):
    """Fails with a message that quotes private data (a caption): it must never be shown."""

    def caption(self, images):
        raise ValueError("PRIVATE-CAPTION-TEXT could not be parsed")


class BoomRenderer(SolidRenderer):
    def render(self, prompts, seeds):
        raise OSError("render server said no (token sk-LEAKY999 rejected)")


class BoomEmbedder(BowEmbedder):
    def embed(self, texts):
        raise KeyError("PRIVATE-TEXT")


class NotABackend:
    """Not a subclass of any role: a plug-in path pointing at the wrong class."""
