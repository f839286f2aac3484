"""Opening a websocket without formatting a debug line that nobody writes.

Autobahn (under daphne) formats every new connection's 29 settings with pprint
for a debug log line, before the logger drops it because debug logging is off.
In a profile of a hundred tabs opening within two seconds, that formatting was
a third of the event loop's work of accepting them, the streams already
running waiting behind it. Here autobahn's pformat formats only while its
logging is at debug level; otherwise it returns a stand-in. Autobahn uses it
for debug lines and for a timing report (`Timings`) that daphne never turns on.
"""

from pprint import pformat

import txaio
from autobahn.websocket import protocol

STAND_IN = "(not formatted: debug logging is off)"


def pformat_when_debugging(value) -> str:
    if txaio.get_global_log_level() in ("debug", "trace"):
        return pformat(value)
    return STAND_IN


def install():
    protocol.pformat = pformat_when_debugging
