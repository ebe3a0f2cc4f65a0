"""Great Expectations suites, one JSON file per dataset (loaded by ``transforms.quality``).

A package only so the suites install with payrecon and are found from any working directory.
"""
