#!/bin/sh
# The official nats image's contract: arguments that begin with "-" are nats-server's
# flags; anything else is a command to run instead.
set -e
if [ "$#" -eq 0 ] || [ "${1#-}" != "$1" ]; then
  set -- nats-server "$@"
fi
exec "$@"
