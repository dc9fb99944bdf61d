"""driftmon: a data-drift monitoring daemon.

Reads feature and prediction distributions out of a SQL database, compares each
current window with a reference window (KL divergence, PSI, Jensen-Shannon),
stores the results and exposes them to Prometheus.
"""

__version__ = "0.1.0"
