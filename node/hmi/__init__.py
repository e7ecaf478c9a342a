"""The node's own OPC UA server for HMI panels (OPC 40100 model + a plain namespace).

See docs/hmi.md for the address space, security and how to connect a panel.
"""

from node.hmi.interfaces import NodeControl, ResultQuery
from node.hmi.server import HmiServer
from node.hmi.settings import HmiSettings, HmiUser
from node.hmi.users import hash_password, verify_password

__all__ = [
    "HmiServer",
    "HmiSettings",
    "HmiUser",
    "NodeControl",
    "ResultQuery",
    "hash_password",
    "verify_password",
]
