"""A file object that fails like a full disk, for the write-failure tests."""

import errno
import os


class FullDisk:
    """A file object whose data never reaches the disk: its write fails as a full disk does
    (the temporary it was opened on exists, holding nothing)."""

    def __init__(self, raw):
        self.raw = raw

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.raw.close()

    def write(self, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
