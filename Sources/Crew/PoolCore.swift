#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import Logging
import Synchronization

/// The machinery behind ``WorkerPool``: the state machine behind one lock, the worker handles,
/// and the code that performs the machine's actions (sends, signals, spawns, resumptions).
final class PoolCore: Sendable {
    typealias Waiter = UnsafeContinuation<[UInt8], any Error>
    typealias Machine = PoolStateMachine<Waiter>

    let catalog: JobCatalog
    let configuration: WorkerPool.Configuration
    private let launchSpec: ProcessWorker.LaunchSpec
    private let logger: Logger
    private let nextJobID = Atomic<UInt64>(1)

    private struct State: ~Copyable {
        var machine: Machine
        var handles: [Int: ProcessWorker] = [:]
        var shutdownStarted = false
        var drainWaiters: [UInt64: CheckedContinuation<Void, Never>] = [:]
        var exitWaiters: [CheckedContinuation<Void, Never>] = []
        var nextWaiterID: UInt64 = 0
    }
    private let state: Mutex<State>

    init(workers: Workers, catalog: JobCatalog, configuration: WorkerPool.Configuration) {
        self.catalog = catalog
        self.configuration = configuration
        self.logger = configuration.logger
        launchSpec = ProcessWorker.LaunchSpec(
            executablePath: configuration.executable.path,
            arguments: configuration.arguments,
            environment: configuration.environment,
            maxFrameSize: configuration.maxFrameSize,
            forwardStderr: configuration.forwardWorkerStderr
        )
        state = Mutex(State(machine: Machine(
            workerCount: workers.count,
            jobsPerWorker: configuration.jobsPerWorker,
            startFailureLimit: configuration.startFailureLimit
        )))
    }

    func start() {
        perform(state.withLock { ($0.machine.start(), $0.handles) })
    }

    /// Jobs waiting for a worker.
    var queuedCount: Int { state.withLock { $0.machine.queuedCount } }

    var workerProcessIDs: [Int32] {
        state.withLock { $0.handles.values.map(\.pid).sorted() }
    }

    // MARK: Jobs

    func submit(name: String, arguments: [UInt8], priority: JobPriority, timeout: Duration?) async throws -> [UInt8] {
        let jobID = nextJobID.wrappingAdd(1, ordering: .relaxed).oldValue
        return try await withTaskCancellationHandler {
            try await withUnsafeThrowingContinuation { (waiter: Waiter) in
                let request = Machine.Request(
                    id: jobID, name: name, arguments: arguments, priority: priority, timeout: timeout, waiter: waiter)
                perform(state.withLock { ($0.machine.submit(request), $0.handles) })
                // The handler below may have run before the job was queued; cancel it now then.
                if Task.isCancelled { cancel(jobID) }
            }
        } onCancel: {
            cancel(jobID)
        }
    }

    private func cancel(_ jobID: UInt64) {
        perform(state.withLock { ($0.machine.cancel(jobID), $0.handles) })
    }

    // MARK: Performing actions

    private func perform(_ work: (actions: [Machine.Action], handles: [Int: ProcessWorker])) {
        let (actions, handles) = work
        for action in actions {
            switch action {
            case .dispatch(let workerID, let jobID, let name, let arguments, let timeout):
                handles[workerID]?.send(.run(jobID: jobID, name: name, arguments: arguments))
                if let timeout {
                    Supervisor.shared.schedule(at: .now() + timeout) { [weak self] in
                        guard let self else { return }
                        perform(state.withLock { ($0.machine.timeoutExpired(jobID: jobID, after: timeout), $0.handles) })
                    }
                }
            case .resume(let waiter, let result):
                waiter.resume(with: result.mapError { $0 })
            case .requestCancel(let workerID, let jobID):
                handles[workerID]?.send(.cancel(jobID: jobID))
                Supervisor.shared.schedule(at: .now() + configuration.cancellationGracePeriod) { [weak self] in
                    guard let self else { return }
                    perform(state.withLock { ($0.machine.cancelGraceExpired(jobID: jobID), $0.handles) })
                }
            case .spawn(let workerID):
                spawn(workerID)
            case .kill(let workerID):
                handles[workerID]?.signal(SIGKILL)
            case .release(let workerID):
                if let handle = handles[workerID] { release(handle) }
            case .drained:
                let waiters = state.withLock { state in
                    defer { state.drainWaiters.removeAll() }
                    return state.drainWaiters.values
                }
                for waiter in waiters { waiter.resume() }
            case .allWorkersExited:
                let waiters = state.withLock { state in
                    defer { state.exitWaiters.removeAll() }
                    return state.exitWaiters
                }
                for waiter in waiters { waiter.resume() }
            }
        }
    }

    private func release(_ handle: ProcessWorker) {
        handle.release()
        let grace = configuration.shutdown.terminateGracePeriod
        Supervisor.shared.schedule(at: .now() + grace) { handle.signal(SIGTERM) }
        Supervisor.shared.schedule(at: .now() + grace + grace) { handle.signal(SIGKILL) }
    }

    // MARK: Workers

    private func spawn(_ workerID: Int) {
        let spec = launchSpec
        Supervisor.shared.submit { [self] in
            let worker: ProcessWorker
            do throws(CrewError) {
                worker = try ProcessWorker.spawn(id: workerID, spec)
            } catch {
                logger.error("crew: cannot start worker \(workerID): \(error.message)")
                perform(state.withLock { state in
                    _ = state.machine.handshakeFailed(workerID, message: error.message)
                    return (state.machine.workerExited(workerID, termination: nil, stderrTail: nil), state.handles)
                })
                return
            }
            let phase = state.withLock { state in
                state.handles[workerID] = worker
                return state.machine.workers[workerID]?.phase
            }
            worker.start(callbacks(for: workerID))
            logger.debug("crew: started worker", metadata: ["crew.worker": "\(workerID)", "crew.pid": "\(worker.pid)"])
            switch phase {
            case .stopping(.shutdown?)?, nil:
                release(worker)
            case .stopping?:
                worker.signal(SIGKILL)
            default:
                break
            }
        }
    }

    private func callbacks(for workerID: Int) -> ProcessWorker.Callbacks {
        ProcessWorker.Callbacks(
            hello: { [self] hello in
                let problem = handshakeProblem(hello)
                perform(state.withLock { state in
                    let actions = if let problem {
                        state.machine.handshakeFailed(workerID, message: problem)
                    } else {
                        state.machine.workerReady(workerID)
                    }
                    return (actions, state.handles)
                })
                if let problem { logger.error("crew: worker \(workerID) refused: \(problem)") }
            },
            messages: { [self] messages in
                perform(state.withLock { state in
                    var actions: [Machine.Action] = []
                    for message in messages {
                        let jobID: UInt64
                        let result: Result<[UInt8], CrewError>
                        switch message {
                        case .result(let id, let output):
                            jobID = id
                            result = .success(output)
                        case .failure(let id, let kind, let errorType, let text):
                            jobID = id
                            result = .failure(CrewError(
                                kind.code, text, jobName: state.machine.running[id]?.name, workerID: workerID,
                                processID: state.handles[workerID]?.pid, remoteErrorType: errorType.isEmpty ? nil : errorType))
                        case .hello:
                            continue  // the reader delivers hellos separately
                        }
                        guard let more = state.machine.jobEnded(jobID, on: workerID, result) else {
                            actions += state.machine.protocolViolation(workerID, message: "an answer for job \(jobID), which it does not hold")
                            break
                        }
                        actions += more
                    }
                    return (actions, state.handles)
                })
            },
            violation: { [self] message in
                logger.error("crew: worker \(workerID) broke the wire protocol: \(message)")
                perform(state.withLock { ($0.machine.protocolViolation(workerID, message: message), $0.handles) })
            },
            exited: { [self] termination, stderrTail in
                let expected = state.withLock { state -> Bool in
                    if case .stopping(.some) = state.machine.workers[workerID]?.phase { return true }
                    return false
                }
                if !expected {
                    logger.warning("crew: worker \(workerID) died: \(termination)")
                }
                perform(state.withLock { state in
                    state.handles[workerID] = nil
                    return (state.machine.workerExited(workerID, termination: termination, stderrTail: stderrTail), state.handles)
                })
            }
        )
    }

    private func handshakeProblem(_ hello: Hello) -> String? {
        guard hello.version == WireProtocol.version else {
            return "the worker speaks protocol version \(hello.version), this pool \(WireProtocol.version) (mismatched builds)"
        }
        let offered = Set(hello.jobNames)
        let missing = catalog.names.filter { !offered.contains($0) }
        guard missing.isEmpty else {
            return "the worker's catalog lacks \(missing.joined(separator: ", ")) (mismatched builds, or a worker executable with another catalog)"
        }
        return nil
    }

    // MARK: Shutdown

    func shutdown(cancelPending: Bool) async {
        let first = state.withLock { state in
            defer { state.shutdownStarted = true }
            return !state.shutdownStarted
        }
        if first {
            perform(state.withLock { ($0.machine.beginShutdown(cancelPending: cancelPending), $0.handles) })
            await waitUntilDrained(timeout: configuration.shutdown.drainTimeout)
            perform(state.withLock { ($0.machine.stopWorkers(), $0.handles) })
        }
        await withCheckedContinuation { (waiter: CheckedContinuation<Void, Never>) in
            let done = state.withLock { state in
                if state.machine.lifecycle == .stopped { return true }
                state.exitWaiters.append(waiter)
                return false
            }
            if done { waiter.resume() }
        }
    }

    /// Lets every worker go without waiting: for a pool dropped without ``shutdown(cancelPending:)``.
    func abandon() {
        let first = state.withLock { state in
            defer { state.shutdownStarted = true }
            return !state.shutdownStarted
        }
        guard first else { return }
        perform(state.withLock { state in
            (state.machine.beginShutdown(cancelPending: true) + state.machine.stopWorkers(), state.handles)
        })
    }

    private func waitUntilDrained(timeout: Duration) async {
        await withCheckedContinuation { (waiter: CheckedContinuation<Void, Never>) in
            let id: UInt64? = state.withLock { state in
                guard !state.machine.isDrained else { return nil }
                state.nextWaiterID += 1
                state.drainWaiters[state.nextWaiterID] = waiter
                return state.nextWaiterID
            }
            guard let id else { return waiter.resume() }
            Supervisor.shared.schedule(at: .now() + timeout) { [weak self] in
                self?.state.withLock { $0.drainWaiters.removeValue(forKey: id) }?.resume()
            }
        }
    }
}
