"""Each framework internal the library touches is still where it expects it.

Every private name of Keras (or TensorFlow, torch, keras-hub) used by
keras-taskrobust is reached through `keras_taskrobust._keras_compat`; a
release that moves one fails here, by name.
"""

import pathlib
import re

import pytest

from keras_taskrobust import _keras_compat as compat

PACKAGE = pathlib.Path(compat.__file__).parent


@pytest.mark.parametrize("name,check", compat.INTERNALS, ids=[name for name, _ in compat.INTERNALS])
def test_internal_is_where_the_library_expects_it(name, check):
    assert check(), (
        f"{name} is not where keras_taskrobust._keras_compat expects it: this "
        "Keras (or TensorFlow / torch / keras-hub) release moved it. Update "
        "_keras_compat.py, the only module that touches it."
    )


def test_no_other_module_touches_an_internal():
    # A private attribute of an object that is not the module's own `self`
    # (`self._x`, `cls._x`), or an import of `keras.src`.
    touch = re.compile(r"keras\.src|(?<![\w])(?!self\.|cls\.)[A-Za-z_][\w\.\)\]]*\.(_[a-z]\w*)")
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        if path.name == "_keras_compat.py":
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#")[0]
            for match in touch.finditer(code):
                if match.group(0) == "keras.src" or not _own_name(path, match.group(1)):
                    offenders.append(f"{path.relative_to(PACKAGE)}:{number}: {line.strip()}")
    assert not offenders, "Framework internals outside _keras_compat.py:\n" + "\n".join(offenders)


def _own_name(path, name):
    """Whether `name` is defined in the project (a module-private helper, say)."""
    return any(re.search(rf"\b(def|class)\s+{name}\b|\b{name}\s*=", p.read_text()) for p in PACKAGE.rglob("*.py")
               if p.name != "_keras_compat.py")
