#!/bin/sh
# Runs a command (one rank of an MPI job) with a /dev/shm of its own: the directory
# $SHMPOOL_NODE_SHM_ROOT/node<rank>, bind-mounted in a private mount namespace, so that a block
# one "node" creates is never seen by another, as on separate machines.
set -e
dir="$SHMPOOL_NODE_SHM_ROOT/node${OMPI_COMM_WORLD_RANK:?not run by mpirun}"
exec unshare --mount --propagation private sh -c 'mount --bind "$0" /dev/shm && exec "$@"' "$dir" "$@"
