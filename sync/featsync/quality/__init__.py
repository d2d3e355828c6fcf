"""Quality gates: Great Expectations suites, featsync validate and the push gate."""
