"""Python clients for the local servers (opensearch-py and elasticsearch-py)."""

from __future__ import annotations

from typing import Any


def opensearch_client(url: str, **kwargs: Any) -> Any:
    """Return an opensearch-py client for a plain-HTTP local OpenSearch."""
    from opensearchpy import OpenSearch

    return OpenSearch(hosts=[url], timeout=30, **kwargs)


def elasticsearch_client(url: str, server_major: int, **kwargs: Any) -> Any:
    """Return an elasticsearch-py client that speaks the server's major version."""
    import elasticsearch
    from elastic_transport import Transport

    client_major = elasticsearch.__versionstr__.split(".")[0]
    if str(server_major) == client_major:
        return elasticsearch.Elasticsearch(url, request_timeout=30, **kwargs)

    # elasticsearch-py N asks for `compatible-with=N` on every request, and an N-1 server rejects
    # that header. Servers accept their own major (and the one before it) as a compatibility
    # version, so ask for the server's own.
    wanted = f"compatible-with={server_major}"
    sent = f"compatible-with={client_major}"

    class _CompatTransport(Transport):
        def perform_request(self, method: str, target: str, *, headers: Any = None, **kw: Any) -> Any:
            if headers:
                headers = headers.copy()
                for name in ("accept", "content-type"):
                    value = headers.get(name)
                    if value and sent in value:
                        headers[name] = value.replace(sent, wanted)
            return super().perform_request(method, target, headers=headers, **kw)

    return elasticsearch.Elasticsearch(url, request_timeout=30, transport_class=_CompatTransport, **kwargs)
