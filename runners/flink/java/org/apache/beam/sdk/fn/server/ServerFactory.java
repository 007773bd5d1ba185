/*
 * Loopback-only gRPC servers for Beam's Java side (job server, artifact service and the
 * Fn API servers a Flink job opens for its SDK workers).
 *
 * Beam's own ServerFactory binds every server to all interfaces (NettyServerBuilder.forPort),
 * whatever host the URL names. Our local job server and clusters must listen on 127.0.0.1
 * only, so runners/flink/jobserver.py compiles this class and puts it ahead of Beam's on the
 * job server's class path. It keeps the public API of org.apache.beam.sdk.fn.server.ServerFactory
 * (Beam 2.62 to 2.70, vendored gRPC 1.69) and binds every TCP server to the loopback address.
 * Unix-domain and epoll variants are served by the same loopback TCP factory.
 */
package org.apache.beam.sdk.fn.server;

import java.io.IOException;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.net.SocketAddress;
import java.util.List;
import java.util.concurrent.TimeUnit;
import java.util.function.Supplier;
import org.apache.beam.model.pipeline.v1.Endpoints;
import org.apache.beam.sdk.fn.channel.SocketAddressFactory;
import org.apache.beam.vendor.grpc.v1p69p0.io.grpc.BindableService;
import org.apache.beam.vendor.grpc.v1p69p0.io.grpc.Server;
import org.apache.beam.vendor.grpc.v1p69p0.io.grpc.ServerInterceptors;
import org.apache.beam.vendor.grpc.v1p69p0.io.grpc.netty.NettyServerBuilder;

public abstract class ServerFactory {

  public static ServerFactory createDefault() {
    return new InetSocketAddressServerFactory(UrlFactory.createDefault(), () -> 0);
  }

  public static ServerFactory createWithUrlFactory(UrlFactory urlFactory) {
    return new InetSocketAddressServerFactory(urlFactory, () -> 0);
  }

  public static ServerFactory createWithPortSupplier(Supplier<Integer> portSupplier) {
    return new InetSocketAddressServerFactory(UrlFactory.createDefault(), portSupplier);
  }

  public static ServerFactory createWithUrlFactoryAndPortSupplier(
      UrlFactory urlFactory, Supplier<Integer> portSupplier) {
    return new InetSocketAddressServerFactory(urlFactory, portSupplier);
  }

  public static ServerFactory createEpollSocket() {
    return createDefault();
  }

  public static ServerFactory createEpollDomainSocket() {
    return createDefault();
  }

  /** A server on a port of the loopback address; its URL is written to {@code builder}. */
  public abstract Server allocateAddressAndCreate(
      List<BindableService> services, Endpoints.ApiServiceDescriptor.Builder builder)
      throws IOException;

  /** A server on the port the descriptor's URL names, bound to the loopback address. */
  public abstract Server create(
      List<BindableService> services, Endpoints.ApiServiceDescriptor serviceDescriptor)
      throws IOException;

  /** TCP servers bound to the loopback address only. */
  public static class InetSocketAddressServerFactory extends ServerFactory {
    private static final int KEEP_ALIVE_SECONDS = 20;
    private final UrlFactory urlFactory;
    private final Supplier<Integer> portSupplier;

    private InetSocketAddressServerFactory(UrlFactory urlFactory, Supplier<Integer> ports) {
      this.urlFactory = urlFactory;
      this.portSupplier = ports;
    }

    @Override
    public Server allocateAddressAndCreate(
        List<BindableService> services, Endpoints.ApiServiceDescriptor.Builder builder)
        throws IOException {
      InetAddress loopback = InetAddress.getLoopbackAddress();
      Server server = bind(services, portSupplier.get());
      builder.setUrl(urlFactory.createUrl(loopback.getHostAddress(), server.getPort()));
      return server;
    }

    @Override
    public Server create(
        List<BindableService> services, Endpoints.ApiServiceDescriptor serviceDescriptor)
        throws IOException {
      SocketAddress address = SocketAddressFactory.createFrom(serviceDescriptor.getUrl());
      if (!(address instanceof InetSocketAddress)) {
        throw new IllegalArgumentException(
            "a loopback TCP server needs a host:port URL, got " + serviceDescriptor.getUrl());
      }
      return bind(services, ((InetSocketAddress) address).getPort());
    }

    private static Server bind(List<BindableService> services, int port) throws IOException {
      InetSocketAddress address = new InetSocketAddress(InetAddress.getLoopbackAddress(), port);
      NettyServerBuilder builder =
          NettyServerBuilder.forAddress(address)
              .maxInboundMessageSize(Integer.MAX_VALUE)
              .permitKeepAliveTime(KEEP_ALIVE_SECONDS, TimeUnit.SECONDS);
      for (BindableService service : services) {
        builder.addService(
            ServerInterceptors.intercept(service, GrpcContextHeaderAccessorProvider.interceptor()));
      }
      return builder.build().start();
    }
  }

  /** Builds the URL clients use to reach a server from its address and port. */
  @FunctionalInterface
  public interface UrlFactory {
    String createUrl(String address, int port);

    static UrlFactory createDefault() {
      return (host, port) -> host + ":" + port;
    }
  }
}
