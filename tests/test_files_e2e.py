"""File sharing end to end: the installed twistd, real sockets, the client core."""

import hashlib
import os
import shutil
import tempfile

from twisted.internet import reactor, task
from twisted.trial import unittest

from .clienttools import make_client
from .procs import TWISTD, kill_twistd, spawn_twistd


class LargeFileTests(unittest.TestCase):
    timeout = 120

    async def test_50_mib_file_shared_while_chat_flows(self):
        """50 MiB uploaded by one user, downloaded by two at once byte-identical, while chat keeps flowing."""
        if not os.path.exists(TWISTD):
            raise unittest.SkipTest("twistd is not installed next to this Python")
        tmp = os.path.abspath(self.mktemp())
        os.makedirs(tmp)
        os.makedirs(os.path.join(tmp, "server"))
        proc, port = await spawn_twistd(reactor, os.path.join(tmp, "server"))
        # The clients' files live elsewhere (memory, when the machine has /dev/shm): on one machine and one
        # ext4 journal, the clients' 150 MiB of writes would make the server's fsync-before-ack wait for
        # them, which no real client on another machine causes (docs/PERFORMANCE.rst, "fsync before ack").
        if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK):
            tmp = tempfile.mkdtemp(dir="/dev/shm")
            self.addCleanup(shutil.rmtree, tmp, True)
        self.addCleanup(kill_twistd, proc)
        clients = {}
        for name in ("alice", "bob", "carol", "dave"):
            client, rec = make_client(port, name, tls=False)
            await client.start()
            self.addCleanup(client.stop)
            clients[name] = (client, rec)
        (alice, arec), (bob, brec), (carol, crec), (dave, drec) = (clients[n] for n in ("alice", "bob", "carol", "dave"))

        data = os.urandom(50 * 1024 * 1024)
        source = os.path.join(tmp, "holiday photos.zip")
        with open(source, "wb") as f:
            f.write(data)
        sha = hashlib.sha256(data).hexdigest()

        sent_at, received = {}, {"alice": {}, "bob": {}}
        busy = {"transfers": True}

        def chat():
            if busy["transfers"]:
                n = len(sent_at)
                sent_at[f"tick {n}"] = reactor.seconds()
                dave.send(f"tick {n}")

        for who, rec in (("alice", arec), ("bob", brec)):
            original = rec.eventReceived

            def hook(event, replay, who=who, original=original):
                if event.get("name") == "dave" and event["kind"] == "message":
                    received[who][event["text"]] = reactor.seconds()
                original(event, replay)

            rec.eventReceived = hook

        ticker = task.LoopingCall(chat)
        ticker.start(0.005)
        self.addCleanup(lambda: ticker.stop() if ticker.running else None)

        upload = alice.share(source)
        await upload.finished
        upload_done = reactor.seconds()
        self.assertEqual(upload.file["sha256"], sha)
        await brec.until(lambda: any(e["kind"] == "file" for e in brec.events))
        await crec.until(lambda: any(e["kind"] == "file" for e in crec.events))
        await drec.until(lambda: any(e["kind"] == "file" for e in drec.events))
        (announced,) = [e["file"] for e in brec.events if e["kind"] == "file"]
        self.assertEqual((announced["name"], announced["size"], announced["sha256"]), ("holiday photos.zip", len(data), sha))

        down_b = bob.download(announced, os.path.join(tmp, "bob.zip"))
        down_c = carol.download(announced, os.path.join(tmp, "carol.zip"))
        await down_b.finished
        bob_done = reactor.seconds()
        await down_c.finished
        busy["transfers"] = False
        ticker.stop()

        for path in ("bob.zip", "carol.zip"):
            with open(os.path.join(tmp, path), "rb") as f:
                self.assertEqual(hashlib.sha256(f.read()).hexdigest(), sha)
            self.assertFalse(os.path.exists(os.path.join(tmp, path + ".part")))

        # chat was not held up behind the transfers: what dave said while they ran
        # reached the uploader before its upload finished and the downloader before its download did
        await brec.until(lambda: set(sent_at) <= set(received["bob"]))
        await arec.until(lambda: set(sent_at) <= set(received["alice"]))
        during_upload = [t for t, at in sent_at.items() if at < upload_done - 0.05]
        during_download = [t for t, at in sent_at.items() if upload_done < at < bob_done - 0.05]
        for tick in during_upload:
            self.assertLess(received["alice"][tick], upload_done, tick)
        for tick in during_download:
            self.assertLess(received["bob"][tick], bob_done, tick)
        latencies = sorted(received["bob"][t] - sent_at[t] for t in sent_at)
        self.assertLess(latencies[len(latencies) // 2], 0.5)
        self.assertTrue(during_upload or during_download, "the transfers were too quick to interleave anything")
