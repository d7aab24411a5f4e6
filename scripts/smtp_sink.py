"""A local SMTP sink for the tests (scripts/smtp.sh): aiosmtpd on 127.0.0.1, a port the kernel
picks, every message accepted and written to a directory as one .eml file.

    python smtp_sink.py DIR

Prints "listening on 127.0.0.1:PORT" once it accepts connections. Each file holds the
envelope (X-Envelope-From, X-Envelope-To headers) and then the message as received; it is
written under a temporary name and renamed, so a reader never sees half a message.
"""

import asyncio
import itertools
import os
import sys
import time

from aiosmtpd.smtp import SMTP

COUNTER = itertools.count()


class Sink:
    def __init__(self, directory):
        self.directory = directory

    async def handle_DATA(self, server, session, envelope):
        name = f"{time.time_ns()}-{os.getpid()}-{next(COUNTER)}"
        tmp = os.path.join(self.directory, f".{name}.tmp")
        head = (
            f"X-Envelope-From: {envelope.mail_from}\r\n"
            f"X-Envelope-To: {', '.join(envelope.rcpt_tos)}\r\n"
        ).encode()
        with open(tmp, "wb") as f:
            f.write(head)
            f.write(envelope.original_content or envelope.content)
        os.rename(tmp, os.path.join(self.directory, f"{name}.eml"))
        return "250 Message accepted for delivery"


def main():
    directory = sys.argv[1]
    os.makedirs(directory, exist_ok=True)
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    handler = Sink(directory)
    server = loop.run_until_complete(
        loop.create_server(lambda: SMTP(handler, hostname="tenure-test-smtp"), "127.0.0.1", 0)
    )
    port = server.sockets[0].getsockname()[1]
    print(f"listening on 127.0.0.1:{port}", flush=True)
    loop.run_forever()


if __name__ == "__main__":
    main()
