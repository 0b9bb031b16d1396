CREATE DATABASE prefect OWNER dicomnode;
