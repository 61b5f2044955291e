"""Download links (``file-link``): a browser's own download manager fetches, resumes and saves shared files."""

import hashlib
import json
import os

from twisted.internet import defer, reactor
from twisted.web.client import Agent, readBody
from twisted.web.http_headers import Headers
from twisted.trial import unittest

from .clienttools import WebServerCase, make_client, turns
from .test_fallback import PollUser, http


class DownloadLinkTests(WebServerCase, unittest.TestCase):
    async def desk(self):
        if not hasattr(self, "deskClient"):
            self.deskClient, _ = make_client(self.port, "desk", tls=False)
            self.addCleanup(self.deskClient.stop)
            await self.deskClient.start()
        return self.deskClient

    async def share(self, name, data, conv=None):
        """The desk user shares ``data``; the file as everyone sees it."""
        desk = await self.desk()
        path = os.path.join(self.tmp, name)
        with open(path, "wb") as f:
            f.write(data)
        upload = desk.share(path, conv=conv)
        await upload.finished
        return upload.file

    async def phone(self, name="phone"):
        user = PollUser(self.port)
        await user.open()
        self.addCleanup(lambda: defer.Deferred.fromCoroutine(user.close()))
        self.assertEqual((await user.login(name, features=["rooms"]))["type"], "synced")
        return user

    async def link(self, user, fid):
        user.frames.clear()
        await user.post({"type": "file-link", "file": fid, "req": "L"})
        await turns(lambda: any(f.get("req") == "L" for f in user.frames))
        return next(f for f in user.frames if f.get("req") == "L")

    def url(self, path):
        return f"http://127.0.0.1:{self.port}{path}"

    async def test_a_link_gets_the_file_whole_and_in_ranges(self):
        data = os.urandom(300_000)
        info = await self.share("field notes.bin", data)
        phone = await self.phone()
        answer = await self.link(phone, info["id"])
        self.assertEqual(answer["type"], "file-link")
        self.assertTrue(answer["url"].endswith("/field%20notes.bin"), answer["url"])
        status, body = await http("GET", self.url(answer["url"]))
        self.assertEqual((status, hashlib.sha256(body).hexdigest()), (200, info["sha256"]))
        # a download manager resuming after 100,000 bytes
        status, body = await http("GET", self.url(answer["url"]), headers={"Range": ["bytes=100000-"]})
        self.assertEqual((status, body), (206, data[100_000:]))
        status, body = await http("GET", self.url(answer["url"]), headers={"Range": ["bytes=-10"]})
        self.assertEqual((status, body), (206, data[-10:]))
        status, _ = await http("GET", self.url(answer["url"]), headers={"Range": ["bytes=400000-"]})
        self.assertEqual(status, 416)

    async def test_abusive_ranges_get_the_file_once_at_most(self):
        """Thousands of overlapping ranges would be the file thousands of times: the answer is the file, once."""
        data = os.urandom(50_000)
        info = await self.share("data.bin", data)
        phone = await self.phone()
        answer = await self.link(phone, info["id"])
        ranges = "bytes=" + ",".join(["0-"] * 1500)
        status, body = await http("GET", self.url(answer["url"]), headers={"Range": [ranges]})
        self.assertEqual((status, len(body)), (200, len(data)))

    async def test_a_shared_page_is_an_attachment_never_a_page(self):
        info = await self.share("evil.html", b"<script>alert(document.cookie)</script>")
        phone = await self.phone()
        answer = await self.link(phone, info["id"])
        agent_headers = {}
        response = await Agent(reactor).request(b"GET", self.url(answer["url"]).encode(), Headers({}))
        await readBody(response)
        for key in (b"content-type", b"content-disposition", b"content-security-policy", b"x-content-type-options"):
            agent_headers[key] = response.headers.getRawHeaders(key, [b""])[0]
        self.assertEqual(agent_headers[b"content-type"], b"application/octet-stream")
        self.assertTrue(agent_headers[b"content-disposition"].startswith(b"attachment;"))
        self.assertIn(b"sandbox", agent_headers[b"content-security-policy"])
        self.assertEqual(agent_headers[b"x-content-type-options"], b"nosniff")

    async def test_bad_and_forged_links_are_refused(self):
        info = await self.share("a.txt", b"hello")
        phone = await self.phone()
        answer = await self.link(phone, info["id"])
        fid, expires, mac = answer["url"].split("/")[2].split(".")
        forged = f"/file/{int(fid) + 1}.{expires}.{mac}/a.txt"
        later = f"/file/{fid}.{int(expires) + 10**6}.{mac}/a.txt"
        for path in (forged, later, "/file/nonsense/a.txt", "/file/"):
            status, _ = await http("GET", self.url(path))
            self.assertIn(status, (403, 404), path)
        self.assertEqual((await self.link(phone, 999999))["code"], "no-such-file")

    async def test_a_file_in_a_room_is_no_file_for_someone_outside_it(self):
        await (await self.desk()).join("staff")
        info = await self.share("pay.txt", b"secret", conv="#staff")
        phone = await self.phone()
        answer = await self.link(phone, info["id"])
        self.assertEqual(answer.get("code"), "no-such-file")
        self.assertNotIn("url", json.dumps(answer))
