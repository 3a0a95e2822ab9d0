#!/usr/bin/env bash
# One GRPO run across several SLURM nodes: every training node runs `python -m core.train` once (it
# becomes torchrun, or accelerate launch with launch.accelerate_config, for that node's GPUs), and
# with VLLM_NODE=1 the last node of the allocation runs `trl vllm-serve` for generation instead
# (TRL's multi-node layout: the trainers send the weights to it over NCCL, grpo.vllm_group_port).
#
#   sbatch --nodes=3 scripts/slurm_train.sh configs/gpu.yaml --set train.num_train_steps=500
#   sbatch --nodes=5 --export=ALL,VLLM_NODE=1 scripts/slurm_train.sh configs/gpu.yaml
#
# The run folder (train.output_dir) must be on storage every node sees; node 0 holds its lock and
# writes status.json, metrics and the model; every rank writes its own rollouts.rank<R>.jsonl. The
# dashboard's Stop (on the machine that sees the run folder) signals rank 0, and every rank on every
# node stops after the same step. Run it from the repository, with .venv set up on every node.
#SBATCH --job-name=simple_grpo
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
#SBATCH --exclusive
set -euo pipefail
[ $# -ge 1 ] || { echo "usage: sbatch [--nodes=N] scripts/slurm_train.sh CONFIG [--set key=value ...]" >&2; exit 2; }
config=$1
shift
mapfile -t nodes < <(scontrol show hostnames "$SLURM_JOB_NODELIST")
gpus=${SLURM_GPUS_ON_NODE:-$(nvidia-smi --list-gpus | wc -l)}
train_nodes=("${nodes[@]}")
extra=()
if [ "${VLLM_NODE:-0}" = 1 ]; then
  vllm_host=${nodes[-1]}
  train_nodes=("${nodes[@]:0:${#nodes[@]}-1}")  # the last node generates, the others train
  model=$(.venv/bin/python -c "import sys; from core.config import load_config; print(load_config(sys.argv[1]).model_name)" "$config")
  srun --nodes=1 --ntasks=1 --nodelist="$vllm_host" .venv/bin/trl vllm-serve --model "$model" \
    --tensor_parallel_size "$gpus" --host 0.0.0.0 --port 8000 &
  extra=(--set grpo.use_vllm=true --set grpo.vllm_mode=server --set "grpo.vllm_server_host=$vllm_host"
         --set grpo.vllm_server_port=8000)
  until .venv/bin/python -c "import socket, sys; socket.create_connection((sys.argv[1], 8000), 5)" "$vllm_host" 2> /dev/null; do
    sleep 10  # the server loads the model first; core.train refuses a server that does not answer
  done
fi
export NUM_MACHINES=${#train_nodes[@]} MAIN_PROCESS_IP=${train_nodes[0]} MAIN_PROCESS_PORT=${MAIN_PROCESS_PORT:-29500}
# one task per training node; SLURM_NODEID (0 on the first node of this step) is the machine's rank
srun --nodes="$NUM_MACHINES" --ntasks-per-node=1 --nodelist="$(IFS=,; echo "${train_nodes[*]}")" \
  bash -c 'MACHINE_RANK=$SLURM_NODEID exec .venv/bin/python -m core.train "$@"' core.train \
  --config "$config" --set "launch.num_processes=$gpus" "${extra[@]}" "$@"
