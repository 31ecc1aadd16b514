"""Packaging for mindserve (src layout). The version lives in src/mindserve/_version.py and
the supported MindSpore and Python ranges in src/mindserve/_requirements.py, the one place each is stated."""

import os

from setuptools import find_packages, setup

HERE = os.path.dirname(os.path.abspath(__file__))


def _read(module, name):
    """A constant of one of the package's dependency-free modules."""
    namespace = {}
    with open(os.path.join(HERE, "src", "mindserve", module)) as handle:
        exec(handle.read(), namespace)
    return namespace[name]


with open(os.path.join(HERE, "README.md"), encoding="utf-8") as handle:
    LONG_DESCRIPTION = handle.read()

# uvicorn[standard]: httptools and uvloop; orjson parses and writes the JSON (mindserve.http._json).
HTTP = ["starlette>=0.27", "uvicorn[standard]>=0.23", "orjson>=3.9"]
TEST = [
    "pytest>=7.3",
    "pytest-xdist>=3",  # the README's test command runs the suite on every core (-n auto)
    "hypothesis>=6",
    "nbclient>=0.7",
    "nbformat>=5",
    "ipykernel>=6",
    "pillow",
    *HTTP,
    "httpx",
    # examples/fastapi_app.py and its test: FastAPI, and python-multipart for its file upload
    "fastapi>=0.100",
    "python-multipart>=0.0.9",
]
PROMETHEUS = ["prometheus-client>=0.17"]
OPENTELEMETRY = ["opentelemetry-api>=1.20"]
# mindserve.ray: a servable as a Ray Serve application (tested with Ray 2.60).
RAY = ["ray[serve]>=2.60"]
# The documentation site's build (mkdocs.yml); the tests build it too.
DOCS = ["mkdocs>=1.6", "mkdocstrings[python]>=1.0", "mkdocstrings-python>=2.0"]

setup(
    name="mindserve",
    version=_read("_version.py", "__version__"),
    description="Serve MindSpore models from inside a Python program: no server to deploy.",
    long_description=LONG_DESCRIPTION,
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    license_files=["LICENSE"],
    package_dir={"": "src"},
    packages=find_packages("src"),
    package_data={"mindserve": ["py.typed"]},
    python_requires=_read("_requirements.py", "PYTHON_REQUIREMENT"),
    install_requires=[
        _read("_requirements.py", "MINDSPORE_REQUIREMENT"),
        "numpy>=1.20",
        "attrs>=22.2",
        "typing-extensions>=4.0",
        "cloudpickle>=2.2",
    ],
    entry_points={
        "console_scripts": ["mindserve = mindserve._cli.main:main"],
        # pytest finds the mindserve_runtime fixture by itself (see docs/testing.md).
        "pytest11": ["mindserve = mindserve.testing.pytest_plugin"],
    },
    extras_require={
        # MindSpore Serving's RESTful protocol as an ASGI app (mindserve.http).
        "http": HTTP,
        "prometheus": PROMETHEUS,
        "opentelemetry": OPENTELEMETRY,
        "ray": RAY,
        "test": [*TEST, *DOCS, *PROMETHEUS, *OPENTELEMETRY, "opentelemetry-sdk>=1.20", *RAY],
        "docs": DOCS,
        "dev": [*TEST, *DOCS, *PROMETHEUS, *OPENTELEMETRY, "opentelemetry-sdk>=1.20", *RAY, "ruff", "mypy"],
    },
    classifiers=[
        "Programming Language :: Python :: 3",
        "Programming Language :: Python :: 3.10",
        "Programming Language :: Python :: 3.11",
        "Programming Language :: Python :: 3.12",
        "Operating System :: POSIX :: Linux",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
