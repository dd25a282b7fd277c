#include "net/engineio_query.h"

#include "api/http.h"

namespace parley::net {

EioQuery parse_eio_query(std::string_view target) {
  EioQuery q;
  size_t mark = target.find('?');
  if (mark == std::string_view::npos) return q;
  auto params = parse_query(std::string(target.substr(mark + 1)));
  if (auto it = params.find("EIO"); it != params.end()) q.eio = it->second;
  if (auto it = params.find("transport"); it != params.end()) q.transport = it->second;
  if (auto it = params.find("sid"); it != params.end()) q.sid = it->second;
  return q;
}

}  // namespace parley::net
