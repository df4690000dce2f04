import Crew
import CrewTestJobs

await Crew.serveIfWorker(TestJobs.catalog)
print("CrewTestWorker is a worker executable for Crew's tests; a WorkerPool starts it.")
