"""The one place that says which MindSpore and Python versions mindserve supports.

``setup.py`` reads this file to build the install requirement and ``python_requires``, the
runtime reads it to check the installed MindSpore when it first loads a model, and
``mindserve doctor`` reads it to check an installation.
"""

#: The versions the test suite runs against.
TESTED_MINDSPORE_VERSIONS = ("2.10.0",)

#: Lowest supported MindSpore (inclusive) and the first unsupported one (exclusive).
MINDSPORE_MIN = (2, 3)
MINDSPORE_BELOW = (2, 11)

#: The pip requirement built from the range above.
MINDSPORE_REQUIREMENT = "mindspore>={}.{},<{}.{}".format(*MINDSPORE_MIN, *MINDSPORE_BELOW)

#: The Pythons MindSpore 2.10 publishes wheels for (3.9 would get an untested MindSpore,
#: 3.13 none at all): lowest supported (inclusive) and first unsupported (exclusive).
PYTHON_MIN = (3, 10)
PYTHON_BELOW = (3, 13)

#: ``python_requires`` built from the range above.
PYTHON_REQUIREMENT = ">={}.{},<{}.{}".format(*PYTHON_MIN, *PYTHON_BELOW)
