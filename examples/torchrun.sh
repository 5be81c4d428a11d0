#!/usr/bin/env bash
# amos-zoo fit on several machines with torchrun: run this script once on every machine (node), each with its own
# NODE_RANK (0 .. NNODES-1) and the same MASTER_ADDR (node 0's address), MASTER_PORT and NNODES. Further arguments are
# `amos-zoo fit` options. Every node needs the dataset and the preprocessing cache at the same path (a shared disk
# works: nodes that fill the cache at once write each entry atomically).
#
#   NODE_RANK=0 NNODES=2 MASTER_ADDR=node0 examples/torchrun.sh --config configs/base/gpu.yaml \
#       --protocol btcv/swin_unetr --data.task amos-ct --data.root /data/amos22      # on node0
#   NODE_RANK=1 NNODES=2 MASTER_ADDR=node0 examples/torchrun.sh ...same options...      # on node1
#
# tests/test_multinode.py runs it as two CPU nodes on one machine (gloo, GPUS_PER_NODE=1).
set -euo pipefail
: "${NODE_RANK:?set NODE_RANK (0 on the first machine, 1 on the second...)}"
: "${MASTER_ADDR:?set MASTER_ADDR (the address of the machine with NODE_RANK 0)}"
NNODES="${NNODES:-2}"
MASTER_PORT="${MASTER_PORT:-29500}"
GPUS_PER_NODE="${GPUS_PER_NODE:-$(nvidia-smi -L 2>/dev/null | wc -l)}"
# torchrun starts one process per GPU; Lightning reads the ranks torchrun sets (its TorchElastic environment), and
# --trainer.num_nodes / --trainer.devices must match them.
exec torchrun --nnodes "$NNODES" --node_rank "$NODE_RANK" --nproc_per_node "$GPUS_PER_NODE" \
    --master_addr "$MASTER_ADDR" --master_port "$MASTER_PORT" --no-python \
    amos-zoo fit --trainer.num_nodes "$NNODES" --trainer.devices "$GPUS_PER_NODE" "$@"
