#!/bin/sh
# As the official image: own /data, then run the command as the redis user.
set -e
if [ "$(id -u)" = 0 ]; then
  chown -R redis:redis /data
  exec setpriv --reuid=redis --regid=redis --init-groups "$0" "$@"
fi
exec "$@"
