"""Who can reach the dashboard, over plain HTTP (no browser): a one-time link made at start or
with the admin token opens a session (HttpOnly, SameSite=Strict cookie); device credentials,
the admin token itself, used links and anonymous requests get no data; actions need the
session's CSRF token; every answer carries the strict CSP."""

from __future__ import annotations

import re
import ssl

import httpx

from tests.helpers.dashboard import sign_in_link
from tests.helpers.fleet import upload_and_queue


def _device_credential(server, name: str) -> str:
    with server.client() as c:
        enrollment = c.post(f"/v1/devices/{name}/enroll", json={}).json()["enrollment_token"]
    r = httpx.post(server.url + "/v1/enroll", json={"device": name},
                   headers={"Authorization": f"Bearer {enrollment}"})
    assert r.status_code == 201, r.text
    return r.json()["credential"]


def test_only_the_admin_token_makes_links_and_only_links_sign_in(serve, builds):
    server = serve()
    with server.client() as c:
        (job,) = upload_and_queue(c, builds["int8"], profile="rpi5")
    device = _device_credential(server, "dev-1")
    assert httpx.post(server.url + "/v1/dashboard/sign-in",
                      headers={"Authorization": f"Bearer {device}"}).status_code == 403
    assert httpx.post(server.url + "/v1/dashboard/sign-in").status_code == 401
    for token in (device, server.token, "x" * 43, ""):
        refused = httpx.get(server.url + "/login", params={"token": token})
        assert refused.status_code == 401 and "set-cookie" not in refused.headers
        assert "rpi5" not in refused.text

    # anonymous: the sign-in page for pages, 401 for everything else, never data
    with httpx.Client(base_url=server.url) as anon:
        for path in ("/", "/queue", "/results", "/search"):
            r = anon.get(path)
            assert r.status_code == 200 and 'id="signin"' in r.text and "rpi5" not in r.text
        for path in ("/fragments/queue", "/charts/report.svg", "/static/../v1/jobs", f"/jobs/{job['id']}/cancel"):
            r = anon.get(path) if not path.endswith("cancel") else anon.post(path, data={"csrf": "x"})
            assert r.status_code == 401 and "rpi5" not in r.text
        csp = anon.get("/").headers["content-security-policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "default-src 'self'" in csp

    with httpx.Client(base_url=server.url) as browser:
        signed = browser.get(sign_in_link(server))
        assert signed.status_code == 200
        cookie = signed.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie and "secure" not in cookie
        assert browser.get(sign_in_link(server)).status_code == 401  # one sign-in per link
        page = browser.get("/queue")
        assert page.status_code == 200 and "rpi5" in page.text
        assert "<script>" not in page.text and 'style="' not in page.text  # no inline script or style
        assert browser.post(f"/jobs/{job['id']}/cancel", data={}).status_code == 403
        assert browser.post(f"/jobs/{job['id']}/cancel", data={"csrf": "wrong"}).status_code == 403
        csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
        done = browser.post(f"/jobs/{job['id']}/cancel", data={"csrf": csrf})
        assert done.status_code == 303 and "cancelled" in done.headers["location"]
        again = browser.post(f"/jobs/{job['id']}/cancel", data={"csrf": csrf})
        assert again.status_code == 303 and "already+cancelled" in again.headers["location"]
        assert browser.post("/jobs/1/cancel", content=b"csrf=" + b"x" * 70_000,
                            headers={"content-type": "application/x-www-form-urlencoded"}).status_code == 413
    with server.client() as c:
        assert c.get(f"/v1/jobs/{job['id']}").json()["state"] == "cancelled"
        # the API is unchanged: the bearer token, not the cookie, opens it
        assert httpx.get(server.url + "/v1/jobs", cookies=dict(browser.cookies)).status_code == 401


def test_revoke_from_the_dashboard_cuts_the_device_off(serve):
    server = serve()
    device = _device_credential(server, "dev-2")
    with server.client() as c:  # the least a device may say about itself: no power, labels or versions
        assert c.post("/v1/devices/register", json={"device": "bare-1", "instance": "1" * 32, "schema_version": 1,
                                                    "runtimes": {"litert": None}}).status_code == 200
    with httpx.Client(base_url=server.url) as browser:
        browser.get(sign_in_link(server))
        fleet = browser.get("/")
        assert fleet.status_code == 200 and 'data-device="bare-1"' in fleet.text and "no sensor" in fleet.text
        assert browser.get("/fragments/fleet").status_code == 200
        csrf = re.search(r'name="csrf" value="([^"]+)"', fleet.text).group(1)
        r = browser.post("/devices/dev-2/revoke", data={"csrf": csrf})
        assert r.status_code == 303 and "dev-2+revoked" in r.headers["location"]
    refused = httpx.post(server.url + "/v1/devices/register", headers={"Authorization": f"Bearer {device}"},
                         json={"device": "dev-2", "instance": "0" * 32, "schema_version": 1})
    assert refused.status_code == 401 and "revoked" in refused.text


def test_the_session_cookie_is_secure_under_tls(serve, tls_files):
    ca = ssl.create_default_context(cafile=str(tls_files["ca"]))
    server = serve("--tls-cert", str(tls_files["server"]), "--tls-key", str(tls_files["key"]), verify=ca)
    link = sign_in_link(server)
    assert link.startswith(server.url + "/login?token=") and server.url.startswith("https://")
    with httpx.Client(verify=ca) as browser:
        signed = browser.get(link)
        assert signed.status_code == 200
        cookie = signed.headers["set-cookie"].lower()
        assert "secure" in cookie and "httponly" in cookie and "samesite=strict" in cookie
        assert browser.get(server.url + "/").status_code == 200 and 'id="fleet"' in browser.get(server.url + "/").text
