"""The notebook side's way to the service: find (or start) it, then talk JSON over HTTP."""

from tunedeck.client.http import ServiceClient, get_client

__all__ = ["ServiceClient", "get_client"]
