// The version of the numbers a job produces, for facts that change them
// without changing the job's spec. The results store stamps every job with
// the version its rows were made under (jobs.results_version) and never lets
// a job continue rows of another version; a bump needs a store migration
// that does the same for the jobs already stored (server/store).
//   1  random init from one torch CPU generator in the parameter order
//   2  random init by the counter-based generator (worker/model/counter_rng.h):
//      every preset's random weights, so every random-init number, changed
#ifndef LAYERFLOW_CATALOG_RESULTS_VERSION_H_
#define LAYERFLOW_CATALOG_RESULTS_VERSION_H_

namespace layerflow::catalog {

inline constexpr int kResultsVersion = 2;

}  // namespace layerflow::catalog

#endif  // LAYERFLOW_CATALOG_RESULTS_VERSION_H_
