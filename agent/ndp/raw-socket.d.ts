// Types for the parts of the `raw-socket` package (1.8) that the neighbour
// proxy uses; the package ships none.
declare module 'raw-socket' {
  import type { EventEmitter } from 'node:events';

  export interface Socket extends EventEmitter {
    setOption(level: number, option: number, value: number): void;
    setOption(level: number, option: number, value: Buffer, length: number): void;
    send(
      buffer: Buffer,
      offset: number,
      length: number,
      address: string,
      afterCallback: (error: Error | null, bytes: number) => void,
    ): Socket;
    close(): Socket;
    on(event: 'message', listener: (buffer: Buffer, source: string) => void): this;
    on(event: 'error', listener: (error: Error) => void): this;
    on(event: 'close', listener: () => void): this;
  }

  interface RawSocketModule {
    createSocket(options: { protocol?: number; addressFamily?: number; bufferSize?: number }): Socket;
    AddressFamily: { IPv4: number; IPv6: number };
    Protocol: { ICMPv6: number };
  }
  const raw: RawSocketModule;
  export default raw;
}
