#include "bus/bus.h"

namespace parley {
namespace {

// In one process, publishing is delivering: the receiver (the hubs' fan-out)
// only posts work to the event loops, so calling it inline is cheap and keeps
// publish order.
class LocalBus final : public Bus {
 public:
  void set_receiver(BusReceiver receiver) override { receiver_ = std::move(receiver); }
  void publish(BusEventPtr event) override {
    if (receiver_) receiver_(event);
  }
  std::string describe() const override { return "local"; }
  bool healthy() const override { return true; }

 private:
  BusReceiver receiver_;
};

}  // namespace

std::unique_ptr<Bus> make_local_bus() { return std::make_unique<LocalBus>(); }

}  // namespace parley
