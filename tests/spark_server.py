"""A local Spark Thrift Server for the engine tests (issue 17), started from the pyspark wheel.

The route a user takes from SQLAlchemy to Spark SQL: the Spark Thrift Server
(HiveServer2's protocol, shipped in pyspark's jars) and PyHive's ``hive://``
dialect. The server runs ``local[2]`` with Java 17, keeps its metastore and
warehouse in a temporary folder, and listens on a free loopback port.
DRIFTMON_TEST_SPARK_URL (``hive://127.0.0.1:10000/default``) points the tests
at a server already running instead.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

SPARK_URL_ENV = "DRIFTMON_TEST_SPARK_URL"
START_TIMEOUT_S = 180.0
THRIFT_SERVER = "org.apache.spark.sql.hive.thriftserver.HiveThriftServer2"


class SparkStartError(RuntimeError):
    pass


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


class SparkThriftServer:
    """One server per test session; ``stop`` ends it and everything it started."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.port = _free_port()
        self.process: subprocess.Popen | None = None
        self.log_path = folder / "thriftserver.log"

    @property
    def url(self) -> str:
        return f"hive://127.0.0.1:{self.port}/default"

    def start(self) -> str:
        from pyspark.find_spark_home import _find_spark_home

        home = _find_spark_home()
        command = [
            os.path.join(home, "bin", "spark-submit"), "--class", THRIFT_SERVER,
            "--master", "local[2]", "--driver-memory", "2g",
            "--conf", f"spark.sql.warehouse.dir={self.folder / 'warehouse'}",
            "--conf", f"spark.driver.extraJavaOptions=-Dderby.system.home={self.folder}",
            "--conf", "spark.ui.enabled=false",
            # Test tables are small: a few shuffle partitions, not 200 per GROUP BY.
            "--conf", "spark.sql.shuffle.partitions=4",
            "--hiveconf", f"hive.server2.thrift.port={self.port}",
            "--hiveconf", "hive.server2.thrift.bind.host=127.0.0.1",
            "spark-internal",
        ]
        environment = {**os.environ, "SPARK_HOME": home}
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(command, cwd=self.folder, env=environment, stdout=log,
                                            stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SparkStartError(f"the Spark Thrift Server exited ({self.process.returncode}): "
                                      f"{self._log_tail()}")
            if _answers(self.port):
                return self.url
            time.sleep(0.5)
        self.stop()
        raise SparkStartError(f"the Spark Thrift Server did not answer within {START_TIMEOUT_S:.0f} s: "
                              f"{self._log_tail()}")

    def _log_tail(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-2000:]
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
