-- Run once by the postgres image on an empty volume: MLflow's metadata DB beside Airflow's.
CREATE DATABASE mlflow;
