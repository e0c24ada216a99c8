"""Redis Cluster hash slots (CRC16/XMODEM of the key's hash tag, mod 16384)."""

from __future__ import annotations


def _table() -> list[int]:
    table = []
    for i in range(256):
        crc = i << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else (crc << 1)
        table.append(crc & 0xFFFF)
    return table


_TABLE = _table()


def hash_tag(key: str) -> str:
    """The part of the key that decides its slot: the first non-empty {...}, else the key."""
    start = key.find("{")
    if start >= 0:
        end = key.find("}", start + 1)
        if end > start + 1:
            return key[start + 1 : end]
    return key


def key_slot(key: str) -> int:
    crc = 0
    for byte in hash_tag(key).encode():
        crc = ((crc << 8) & 0xFFFF) ^ _TABLE[((crc >> 8) ^ byte) & 0xFF]
    return crc % 16384
