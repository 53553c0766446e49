"""Python clients for the local servers (opensearch-py and elasticsearch-py)."""

from __future__ import annotations

from typing import Any


def opensearch_client(url: str, **kwargs: Any) -> Any:
    """Return an opensearch-py client for a plain-HTTP local OpenSearch."""
    from opensearchpy import OpenSearch

    return OpenSearch(hosts=[url], timeout=30, **kwargs)


def elasticsearch_client(url: str, **kwargs: Any) -> Any:
    """Return an elasticsearch-py client for a plain-HTTP local Elasticsearch."""
    # The client is pinned to 8.x (pyproject.toml), the line of the local server: a 9.x client
    # asks for `compatible-with=9`, which an 8.x server rejects.
    from elasticsearch import Elasticsearch

    return Elasticsearch(url, request_timeout=30, **kwargs)
