"""Packaging for mindserve (src layout). The version lives in src/mindserve/_version.py and
the supported MindSpore range in src/mindserve/_requirements.py, the one place each is stated."""

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

HTTP = ["starlette>=0.27", "uvicorn>=0.23"]
TEST = [
    "pytest>=7.3",
    "hypothesis>=6",
    "nbclient>=0.7",
    "nbformat>=5",
    "ipykernel>=6",
    "pillow",
    *HTTP,
    "httpx",
]
PROMETHEUS = ["prometheus-client>=0.17"]
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
    # The Pythons MindSpore 2.10 publishes wheels for (3.9 would get an untested MindSpore,
    # 3.13 none at all).
    python_requires=">=3.10,<3.13",
    install_requires=[
        _read("_requirements.py", "MINDSPORE_REQUIREMENT"),
        "numpy>=1.20",
        "attrs>=22.2",
        "typing-extensions>=4.0",
        "cloudpickle>=2.2",
    ],
    # pytest finds the mindserve_runtime fixture by itself (see docs/testing.md).
    entry_points={"pytest11": ["mindserve = mindserve.testing.pytest_plugin"]},
    extras_require={
        "prometheus": PROMETHEUS,
        # MindSpore Serving's RESTful protocol as an ASGI app (mindserve.http).
        "http": HTTP,
        "ray": RAY,
        "test": [*TEST, *DOCS, *PROMETHEUS, *RAY],
        "docs": DOCS,
        "dev": [*TEST, *DOCS, *PROMETHEUS, *RAY, "ruff", "mypy"],
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
