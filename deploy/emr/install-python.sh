#!/bin/bash
# EMR bootstrap action: CPython 3.11 on every node, the interpreter the jobs' Python package
# archive is built for (spark_jobs/requirements.txt, spotlake.job_dependencies). Amazon EMR 7
# runs on Amazon Linux 2023, whose default python3 is 3.9; AL2023's repositories carry python3.11
# (reached through the S3 gateway endpoint in private subnets). The pool's spark-env
# classification points PYSPARK_PYTHON at it (spotlake.providers.emr).
set -euo pipefail
if ! command -v python3.11 >/dev/null 2>&1; then
  sudo dnf install -y -q python3.11
fi
python3.11 -c 'import sys; assert sys.version_info[:2] == (3, 11), sys.version'
echo "python3.11 ready: $(python3.11 --version)"
