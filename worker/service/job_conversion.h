// proto <-> plain-struct conversion at the worker's LibTorch boundary.
// This is the only worker code that sees both sides' types.
#ifndef LAYERFLOW_WORKER_SERVICE_JOB_CONVERSION_H_
#define LAYERFLOW_WORKER_SERVICE_JOB_CONVERSION_H_

#include "layerflow/v1/experiment.pb.h"
#include "layerflow/v1/worker.pb.h"
#include "worker/runtime/job_runner.h"
#include "worker/runtime/train_job.h"

namespace layerflow::worker {

JobConfig ToJobConfig(const v1::JobSpec& spec);
// A TRAIN job's spec (JobSpec.train, defaults applied by the coordinator).
TrainJobConfig ToTrainJobConfig(const v1::JobSpec& spec);
v1::ResultChunk ToResultChunk(const ChunkResult& chunk, const std::string& job_id,
                              const std::string& lease_id);
v1::WorkerCapabilities ToCapabilities(const DeviceConfig& device);

}  // namespace layerflow::worker

#endif  // LAYERFLOW_WORKER_SERVICE_JOB_CONVERSION_H_
