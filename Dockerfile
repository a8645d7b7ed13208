# The Airflow image of the loyalty monitoring package (docker-compose.yaml builds it).
# Extends the official image the way its docs recommend: the pinned requirements are
# installed as the airflow user, with apache-airflow itself pinned in requirements.txt so
# that nothing up- or downgrades it. (Not with Airflow's release constraints file: the
# provider versions pinned here are newer than the ones it lists.)
FROM apache/airflow:3.3.2-python3.11

COPY --chown=airflow:root requirements.txt /opt/airflow/requirements.txt
RUN pip install --no-cache-dir -r /opt/airflow/requirements.txt

# The package itself; docker-compose.yaml also mounts dags/, plugins/ and include/ over
# these for development. demo/ serves the demo-data and notification-sink services.
COPY --chown=airflow:root dags/ /opt/airflow/dags/
COPY --chown=airflow:root plugins/ /opt/airflow/plugins/
COPY --chown=airflow:root include/ /opt/airflow/include/
# Warm worker parents (loyalty_checks/warm.py): Airflow imports it from $AIRFLOW_HOME/config/.
COPY --chown=airflow:root config/airflow_local_settings.py /opt/airflow/config/airflow_local_settings.py
COPY --chown=airflow:root demo/ /opt/airflow/demo/
