"""payrecon's Beam transforms. Importing the package registers the Arrow table coder."""

from transforms import arrow_coder as _arrow_coder  # noqa: F401
