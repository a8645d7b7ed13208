"""The benchmark: a production-scale data generator (bench.generate) and the
measurements of every check's SQL, DAG run and DAG parse (bench.run)."""
