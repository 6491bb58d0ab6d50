"""The few CUDA runtime calls TensorRT inference needs, through ctypes on libcudart.

Using libcudart directly (it ships with every JetPack and CUDA install) avoids requiring
pycuda or cuda-python on the device.
"""

import ctypes
import ctypes.util
import glob

from ..errors import AgentError, Unavailable

H2D, D2H = 1, 2
ATTR_CC_MAJOR, ATTR_CC_MINOR = 75, 76  # cudaDevAttrComputeCapabilityMajor / Minor


def _candidates():
    names = ["libcudart.so", ctypes.util.find_library("cudart")]
    for pattern in ("/usr/local/cuda/lib64/libcudart.so*", "/usr/local/cuda-*/lib64/libcudart.so*",
                    "/usr/lib/aarch64-linux-gnu/libcudart.so*", "/usr/lib/x86_64-linux-gnu/libcudart.so*"):
        names.extend(sorted(glob.glob(pattern)))
    return [n for n in names if n]


class Cuda:
    """libcudart: device memory, copies, a stream, and the device's name and compute capability."""

    def __init__(self, device=0):
        self.lib = None
        errors = []
        for name in _candidates():
            try:
                self.lib = ctypes.CDLL(name)
                self.library = name
                break
            except OSError as exc:
                errors.append(str(exc))
        if self.lib is None:
            raise Unavailable("CUDA runtime absent: cannot load libcudart (%s)" % ("; ".join(errors[:2]) or "not found"))
        self.lib.cudaGetErrorString.restype = ctypes.c_char_p
        self._check(self.lib.cudaSetDevice(int(device)), "cudaSetDevice")
        self.device = int(device)

    def _check(self, rc, what):
        if rc != 0:
            msg = self.lib.cudaGetErrorString(rc)
            raise AgentError("%s failed: %s (CUDA error %d)" % (what, msg.decode() if msg else "?", rc))

    def runtime_version(self):
        v = ctypes.c_int(0)
        self._check(self.lib.cudaRuntimeGetVersion(ctypes.byref(v)), "cudaRuntimeGetVersion")
        return "%d.%d" % (v.value // 1000, (v.value % 1000) // 10)

    def compute_capability(self):
        major, minor = ctypes.c_int(0), ctypes.c_int(0)
        self._check(self.lib.cudaDeviceGetAttribute(ctypes.byref(major), ATTR_CC_MAJOR, self.device), "cudaDeviceGetAttribute")
        self._check(self.lib.cudaDeviceGetAttribute(ctypes.byref(minor), ATTR_CC_MINOR, self.device), "cudaDeviceGetAttribute")
        return "%d.%d" % (major.value, minor.value)

    def device_name(self):
        # cudaDeviceProp starts with char name[256] in every CUDA version; the rest is left alone.
        buf = ctypes.create_string_buffer(8192)
        self._check(self.lib.cudaGetDeviceProperties(buf, self.device), "cudaGetDeviceProperties")
        return buf.raw[:256].split(b"\x00", 1)[0].decode("utf-8", "replace")

    def malloc(self, nbytes):
        ptr = ctypes.c_void_p()
        self._check(self.lib.cudaMalloc(ctypes.byref(ptr), ctypes.c_size_t(max(int(nbytes), 1))), "cudaMalloc")
        return ptr.value

    def free(self, ptr):
        self.lib.cudaFree(ctypes.c_void_p(ptr))

    def htod(self, dst, host_ptr, nbytes):
        self._check(self.lib.cudaMemcpy(ctypes.c_void_p(dst), ctypes.c_void_p(host_ptr), ctypes.c_size_t(nbytes), H2D), "cudaMemcpy")

    def stream(self):
        s = ctypes.c_void_p()
        self._check(self.lib.cudaStreamCreate(ctypes.byref(s)), "cudaStreamCreate")
        return s.value or 0

    def synchronizer(self, stream):
        """A zero-argument callable that waits for ``stream`` (bound once: no lookup per call)."""
        fn = self.lib.cudaStreamSynchronize
        handle = ctypes.c_void_p(stream)
        return lambda: fn(handle)
