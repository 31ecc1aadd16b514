"""The one place that says which MindSpore versions mindserve supports.

``setup.py`` reads this file to build the install requirement, and the runtime reads it
to check the installed MindSpore when it first loads a model.
"""

#: The versions the test suite runs against.
TESTED_MINDSPORE_VERSIONS = ("2.10.0",)

#: Lowest supported MindSpore (inclusive) and the first unsupported one (exclusive).
MINDSPORE_MIN = (2, 3)
MINDSPORE_BELOW = (2, 11)

#: The pip requirement built from the range above.
MINDSPORE_REQUIREMENT = "mindspore>={}.{},<{}.{}".format(*MINDSPORE_MIN, *MINDSPORE_BELOW)
