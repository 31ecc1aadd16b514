"""Observers that record what a runtime reports, for tests to look at."""

import mindserve


class WarmUps(mindserve.Observer):
    """Records every warm-up report."""

    def __init__(self):
        self.reports = []

    def on_warm_up(self, report):
        self.reports.append(report)
