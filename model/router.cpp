#include "model/router.h"

#include <stdexcept>

namespace mor {

double LossParts::total() const {
  double t = ce;
  for (const LossTerm& l : terms) t += l.coeff * l.value;
  return t;
}

double LossParts::term(std::string_view name) const {
  for (const LossTerm& l : terms)
    if (name == l.name) return l.value;
  return 0;
}

LossParts& LossParts::operator+=(const LossParts& o) {
  ce += o.ce;
  if (terms.empty())
    terms = o.terms;
  else
    for (size_t i = 0; i < terms.size() && i < o.terms.size(); ++i) terms[i].value += o.terms[i].value;
  return *this;
}

std::unique_ptr<Router> make_router(const ModelConfig& c, Backend& be) {
  switch (c.router) {
    case RouterKind::None:
      return make_router_none(be);
    case RouterKind::Expert:
      return make_router_expert(c, be);
    case RouterKind::Token:
      return make_router_token(c, be);
  }
  throw std::logic_error("make_router: unknown router kind");
}

}  // namespace mor
