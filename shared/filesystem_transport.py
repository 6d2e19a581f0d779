"""kombu's filesystem transport with an atomic put: the embedded stack's broker.

kombu writes a message file in place (open, then lock, then write) while its reader moves and reads files
without taking the lock, so a consumer polling the folder can take a file that is still empty and crash on
it. That happens whenever a worker re-publishes a message while its own consumer polls (a hand-back during
a drain). Here a message is written under a name the reader skips and renamed into place once complete.
"""

from __future__ import annotations

import os
import uuid
from time import monotonic

from kombu.transport import filesystem
from kombu.utils.encoding import str_to_bytes
from kombu.utils.json import dumps

TRANSPORT = f"{__name__}:Transport"


class Channel(filesystem.Channel):
    def _put(self, queue, payload, **kwargs):
        # kombu's own file name (oldest first by its millisecond prefix), so its reader orders and filters alike.
        name = f"{int(round(monotonic() * 1000))}_{uuid.uuid4()}.{queue}.msg"
        final = os.path.join(self.data_folder_out, name)
        partial = os.path.join(self.data_folder_out, f".partial-{uuid.uuid4()}")  # no ".<queue>.msg" suffix
        try:
            with open(partial, "wb") as file:
                file.write(str_to_bytes(dumps(payload)))
            os.replace(partial, final)  # atomic: the reader sees no file or the whole message
        except OSError as exc:
            raise filesystem.ChannelError(f"Cannot add file {final!r} to directory") from exc


class Transport(filesystem.Transport):
    Channel = Channel
