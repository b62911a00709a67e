#!/usr/bin/env python3
"""CPython's side of the interop tests: creates, reads, writes and dumps ShareableLists.

Values travel as JSON in the shmpool CLI's encoding. Every block this script creates or attaches
is unregistered from CPython's resource tracker, which would otherwise unlink blocks it merely
attached when this process exits (CPython 3.11 behaviour, gh-82300).
"""
import json
import math
import sys
from multiprocessing import resource_tracker, shared_memory


def decode(v):
    if isinstance(v, dict):
        if "bytes" in v:
            return bytes.fromhex(v["bytes"])
        if "float" in v:
            return float(v["float"])
    return v


def encode(v):
    if isinstance(v, bytes):
        return {"bytes": v.hex()}
    if isinstance(v, float) and not math.isfinite(v):
        return {"float": "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf")}
    return v


def attach(name):
    lst = shared_memory.ShareableList(name=name)
    resource_tracker.unregister(lst.shm._name, "shared_memory")
    return lst


def main(argv):
    cmd, name = argv[1], argv[2]
    if cmd == "create":  # create NAME JSON-ARRAY
        lst = shared_memory.ShareableList([decode(v) for v in json.loads(argv[3])], name=name)
        resource_tracker.unregister(lst.shm._name, "shared_memory")
    elif cmd == "dump":  # dump NAME: the whole block in hex
        shm = shared_memory.SharedMemory(name=name)
        resource_tracker.unregister(shm._name, "shared_memory")
        print(bytes(shm.buf).hex())
        shm.close()
    elif cmd == "read":  # read NAME: {"values": [...], "format": ..., "repr": ...}
        lst = attach(name)
        print(json.dumps({"values": [encode(v) for v in lst], "format": lst.format, "repr": repr(lst)}))
        lst.shm.close()
    elif cmd == "set":  # set NAME JSON-ARRAY-OF-[INDEX, VALUE]
        lst = attach(name)
        for index, value in json.loads(argv[3]):
            lst[index] = decode(value)
        lst.shm.close()
    elif cmd == "get":  # get NAME INDEX: one item, or the exception's type name
        lst = attach(name)
        try:
            print(json.dumps({"value": encode(lst[int(argv[3])])}))
        except Exception as e:  # noqa: BLE001 - the test wants the type name
            print(json.dumps({"error": type(e).__name__}))
        lst.shm.close()
    else:
        sys.exit(f"unknown command {cmd}")


if __name__ == "__main__":
    main(sys.argv)
