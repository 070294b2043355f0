// The results page's script and style sheet, embedded in the binary at
// build time from server/web/assets/ (CMakeLists.txt makes assets.cc), so
// that the coordinator serves them with no files beside it.
#ifndef LAYERFLOW_SERVER_WEB_ASSETS_H_
#define LAYERFLOW_SERVER_WEB_ASSETS_H_

namespace layerflow::server::web {

extern const char kScript[];      // assets/layerflow.js, served at /layerflow.js
extern const char kStyleSheet[];  // assets/layerflow.css, inlined in every page

}  // namespace layerflow::server::web

#endif  // LAYERFLOW_SERVER_WEB_ASSETS_H_
