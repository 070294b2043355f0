# The generated protobuf / gRPC modules of proto/layerflow/v1/*.proto
# (experiment_pb2, coordinator_pb2, coordinator_pb2_grpc, worker_pb2, ...):
# setup.py writes them here at build time; they are never committed.
