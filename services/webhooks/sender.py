"""One try of one webhook: a signed POST to the receiver, pinned to an address the policy allows (issue 14).

No redirect is followed (a 3xx ends the delivery: the receiver's URL is wrong), the receiver's body is read
no further than `MAX_RESPONSE_BYTES` and otherwise ignored, and each try opens its own connection, bounded by
the connect and read timeouts. TLS is verified against the URL's host name (SNI and the certificate), though
the connection goes to the address judged by the policy.
"""

from __future__ import annotations

from urllib.parse import urlsplit

import certifi
import urllib3

from services.webhooks.addresses import AddressPolicy, Resolve, resolve
from shared.webhooks.deliveries import Outcome

MAX_RESPONSE_BYTES = 4096
USER_AGENT = "llada-serve-webhooks/1"
DEFAULT_PORTS = {"http": 80, "https": 443}


class WebhookSender:
    def __init__(self, policy: AddressPolicy, *, timeout_s: float, ca_file: str | None = None,
                 resolve_host: Resolve = resolve):
        self.policy = policy
        self.timeout = urllib3.Timeout(connect=timeout_s, read=timeout_s)
        self.ca_file = ca_file or certifi.where()
        self.resolve = resolve_host

    def post(self, url: str, body: bytes, headers: dict[str, str]) -> Outcome:
        parts = urlsplit(url)
        host, port = parts.hostname or "", parts.port or DEFAULT_PORTS[parts.scheme]
        try:
            addresses = self.resolve(host, port)
        except OSError as err:
            return Outcome(error=f"cannot resolve {host}: {err}")
        for address in addresses:
            why = self.policy.refusal(address)
            if why is not None:
                return Outcome(error=f"refused: {host} resolves to {address}; {why} (webhooks reach public "
                                     "addresses only, unless LLADA_WEBHOOK_ALLOW_NETWORKS allows it)", final=True)
        if not addresses:
            return Outcome(error=f"cannot resolve {host}: no address")
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        pool = self._pool(parts.scheme, addresses[0], port, host)
        try:
            response = pool.urlopen("POST", path, body=body, redirect=False, retries=False, preload_content=False,
                                    assert_same_host=False, timeout=self.timeout,
                                    headers={**headers, "Host": parts.netloc, "Content-Type": "application/json",
                                             "User-Agent": USER_AGENT})
            try:
                response.read(MAX_RESPONSE_BYTES)  # ignored: the status is the answer
            finally:
                response.close()  # the rest is never read: the connection goes with the pool
        except urllib3.exceptions.HTTPError as err:
            return Outcome(error=f"{type(err).__name__}: {_reason(err)}")
        finally:
            pool.close()
        status = response.status
        if 300 <= status < 400:
            return Outcome(status, f"answered a redirect (HTTP {status}); redirects are not followed", final=True)
        if not 200 <= status < 300:
            return Outcome(status, f"answered HTTP {status}")
        return Outcome(status)

    def _pool(self, scheme: str, address: str, port: int, host: str) -> urllib3.HTTPConnectionPool:
        if scheme == "https":
            return urllib3.HTTPSConnectionPool(address, port, maxsize=1, cert_reqs="CERT_REQUIRED",
                                               ca_certs=self.ca_file, server_hostname=host, assert_hostname=host)
        return urllib3.HTTPConnectionPool(address, port, maxsize=1)


def _reason(err: Exception) -> str:
    inner = getattr(err, "reason", None)
    return str(inner or err).splitlines()[0][:300]
