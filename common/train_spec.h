// A TRAIN job's settings between the wire (layerflow.v1.TrainSpec) and the
// catalog's plain struct (catalog/train.h), in one place for the coordinator
// (validation, defaults, chunk counts) and the worker (its job config).
// Field for field; defaults are the catalog's (WithTrainDefaults), applied by
// the caller.
#ifndef LAYERFLOW_COMMON_TRAIN_SPEC_H_
#define LAYERFLOW_COMMON_TRAIN_SPEC_H_

#include "catalog/train.h"
#include "layerflow/v1/experiment.pb.h"

namespace layerflow {

catalog::TrainSettings TrainSettingsOf(const layerflow::v1::TrainSpec& train);
layerflow::v1::TrainSpec TrainSpecOf(const catalog::TrainSettings& settings);

}  // namespace layerflow

#endif  // LAYERFLOW_COMMON_TRAIN_SPEC_H_
