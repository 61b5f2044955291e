from twisted.application.service import ServiceMaker

tcpchat = ServiceMaker("tcpchat", "tcpchat.tap", "A self-hosted group chat server for local networks.", "tcpchat")
