"""The API's content negotiation (a module of its own: DRF imports it while defining APIView)."""

from __future__ import annotations

from django.http import Http404
from rest_framework.exceptions import ValidationError
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.renderers import BaseRenderer


class FormatNegotiation(DefaultContentNegotiation):
    """DRF's content negotiation, but a ``?format=`` no renderer has is refused as an invalid
    parameter (400, as the API's filters are), not answered 404 as if the endpoint were not
    there."""

    def filter_renderers(self, renderers: list[BaseRenderer], format: str) -> list[BaseRenderer]:
        try:
            return super().filter_renderers(renderers, format)
        except Http404:
            known = ", ".join(dict.fromkeys(str(r.format) for r in renderers))
            raise ValidationError({"format": [f"unknown format; expected {known}"]}) from None
