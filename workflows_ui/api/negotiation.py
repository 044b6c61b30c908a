"""The API's content negotiation (a module of its own: DRF imports it while defining APIView)."""

from __future__ import annotations

from django.http import Http404
from rest_framework.exceptions import ValidationError
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.renderers import BaseRenderer
from rest_framework.request import Request


class FormatNegotiation(DefaultContentNegotiation):
    """DRF's content negotiation, but a ``?format=`` no renderer has is refused as an invalid
    parameter (400, as the API's filters are), not answered 404 as if the endpoint were not
    there, and an ``Accept:`` sent empty is taken as no ``Accept`` at all."""

    def get_accept_list(self, request: Request) -> list[str]:
        # Some clients and proxies send the header with nothing in it; DRF reads that as one
        # empty media type no renderer matches and answers 406, though the client asked for
        # nothing in particular.
        if not request.headers.get("accept", "").strip(" \t,"):
            return ["*/*"]
        return super().get_accept_list(request)

    def filter_renderers(self, renderers: list[BaseRenderer], format: str) -> list[BaseRenderer]:
        try:
            return super().filter_renderers(renderers, format)
        except Http404:
            known = ", ".join(dict.fromkeys(str(r.format) for r in renderers))
            raise ValidationError({"format": [f"unknown format; expected {known}"]}) from None
