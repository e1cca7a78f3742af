"""Wheels from source folders holding compiled code (C, C++, pybind11), for a kernel's glibc.

A GCC build links against the build machine's glibc and libstdc++ (a test build needed glibc 2.36,
above Kaggle's 2.35), so ``bundler compiled`` cross-compiles with zig (the ``ziglang`` package
from the registry: clang with a static libc++, targeting an old glibc), packs the extension module
into a wheel tagged for the target's Python and ``manylinux``, and checks the result: its tags, the
glibc symbol versions and shared libraries the module needs (read from the ELF), and an import in
the target's Python where one is installed here.

``toolchain`` writes the zig compiler wrappers, ``build`` runs CMake or pip with them and packs the
wheel, ``check`` inspects a built wheel.
"""
