"""The aetcd operations BreakerClient runs, each awaited with an inner client.

Plain operations are aetcd's own methods, looked up once. The composite ones
do all their etcd work inside one guarded call: ``replace`` is one
transaction, and listings are fetched whole before anything is yielded.
"""

from __future__ import annotations

from typing import Any, Final

import aetcd

from ._session import Op

_C = aetcd.Client

GET: Final[Op[aetcd.Get | None]] = _C.get
GET_PREFIX: Final[Op[aetcd.GetRange]] = _C.get_prefix
GET_RANGE: Final[Op[aetcd.GetRange]] = _C.get_range
GET_ALL: Final[Op[aetcd.GetRange]] = _C.get_all
PUT: Final[Op[aetcd.Put]] = _C.put
DELETE: Final[Op[aetcd.Delete | None]] = _C.delete
DELETE_PREFIX: Final[Op[aetcd.DeleteRange]] = _C.delete_prefix
DELETE_RANGE: Final[Op[aetcd.DeleteRange]] = _C.delete_range
TRANSACTION: Final[Op[tuple[bool, list[Any]]]] = _C.transaction
LEASE: Final[Op[aetcd.Lease]] = _C.lease
REVOKE_LEASE: Final[Op[None]] = _C.revoke_lease
REFRESH_LEASE: Final[Op[Any]] = _C.refresh_lease
STATUS: Final[Op[aetcd.Status]] = _C.status
ADD_MEMBER: Final[Op[aetcd.Member]] = _C.add_member
REMOVE_MEMBER: Final[Op[None]] = _C.remove_member
UPDATE_MEMBER: Final[Op[None]] = _C.update_member
COMPACT: Final[Op[None]] = _C.compact
DEFRAGMENT: Final[Op[None]] = _C.defragment
HASH: Final[Op[int]] = _C.hash
CREATE_ALARM: Final[Op[list[aetcd.Alarm]]] = _C.create_alarm
DISARM_ALARM: Final[Op[list[aetcd.Alarm]]] = _C.disarm_alarm
SNAPSHOT: Final[Op[None]] = _C.snapshot


async def replace(
    client: aetcd.Client,
    key: bytes,
    initial_value: bytes,
    new_value: bytes,
    lease: Any,
) -> bool:
    """``aetcd.Client.replace`` as a single transaction."""
    txn = client.transactions
    succeeded, _ = await _C.transaction(
        client,
        compare=[txn.value(key) == initial_value],
        success=[txn.put(key, new_value, lease=lease)],
        failure=[],
    )
    return bool(succeeded)


async def get_lease_info(client: aetcd.Client, lease_id: int, keys: bool) -> Any:
    """``aetcd.Client.get_lease_info``, whose ``keys`` is keyword-only."""
    return await _C.get_lease_info(client, lease_id, keys=keys)


async def members(client: aetcd.Client) -> list[aetcd.Member]:
    """Every cluster member, fetched whole."""
    return [member async for member in _C.members(client)]


async def list_alarms(
    client: aetcd.Client, member_id: int, alarm_type: str
) -> list[aetcd.Alarm]:
    """Every active alarm, fetched whole."""
    return [alarm async for alarm in _C.list_alarms(client, member_id, alarm_type)]


REPLACE: Final[Op[bool]] = replace
GET_LEASE_INFO: Final[Op[Any]] = get_lease_info
MEMBERS: Final[Op[list[aetcd.Member]]] = members
LIST_ALARMS: Final[Op[list[aetcd.Alarm]]] = list_alarms
