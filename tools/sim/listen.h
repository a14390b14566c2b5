// One way for every simulator to open its listening socket: address parsed, reuse_address, bind, listen;
// a failure is printed as "<who>: ..." naming the address and the reason.
#pragma once

#include <boost/asio/ip/tcp.hpp>
#include <cstdint>
#include <iostream>
#include <string>

namespace cpd::sim {

inline bool open_listener(boost::asio::ip::tcp::acceptor& acceptor, const std::string& host,
                          std::uint16_t port, const std::string& who) {
  namespace asio = boost::asio;
  using tcp = asio::ip::tcp;
  boost::system::error_code ec;
  const tcp::endpoint ep(asio::ip::make_address(host, ec), port);
  if (ec) {
    std::cerr << who << ": bad --host " << host << ": " << ec.message() << "\n";
    return false;
  }
  acceptor.open(ep.protocol(), ec);
  if (!ec) {
    acceptor.set_option(tcp::acceptor::reuse_address(true), ec);
  }
  if (!ec) {
    acceptor.bind(ep, ec);
  }
  if (!ec) {
    acceptor.listen(asio::socket_base::max_listen_connections, ec);
  }
  if (ec) {
    std::cerr << who << ": cannot listen on " << host << ":" << port << ": " << ec.message() << "\n";
    boost::system::error_code ignored;
    acceptor.close(ignored);
    return false;
  }
  return true;
}

}  // namespace cpd::sim
