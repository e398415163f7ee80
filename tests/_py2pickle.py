"""Pickles written the way Python 2 wrote them (protocol 2, ``str`` values as BINSTRING
opcodes, numpy under ``numpy.core``), for the readers of the benchmarks published as
Python 2 pickles. Pass ``bytes`` where Python 2 had ``str`` (dict keys, names)."""

import io
import pickle
import struct


class _Py2Pickler(pickle._Pickler):  # the pure-Python pickler, whose dispatch is a dict
    dispatch = pickle._Pickler.dispatch.copy()

    def save_py2_str(self, obj):
        if len(obj) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    dispatch[bytes] = save_py2_str


def dumps_py2(obj) -> bytes:
    buf = io.BytesIO()
    _Py2Pickler(buf, protocol=2).dump(obj)
    return buf.getvalue().replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")


def write_py2(path, obj):
    path.write_bytes(dumps_py2(obj))
    return path
